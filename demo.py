"""The README's main job: the offline mini-reproduction of FCN (see minirepro.py)."""
import sys

import minirepro

if __name__ == '__main__':
    sys.exit(minirepro.main(sys.argv[1:]))
