"""The main demo (`make demo`): the FCN recipe in miniature, offline on the
CPU, reproducing the shape of the paper's Table 2 on synthetic data. See
minirepro.py (python demo.py --help)."""
import sys

import minirepro

if __name__ == '__main__':
    minirepro.main(sys.argv[1:])
