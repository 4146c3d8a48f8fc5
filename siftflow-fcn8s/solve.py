"""Train this model with the reference settings: python solve.py --help"""
from common import cli

cli.quit_while_starting('solve.py')  # until training.main() handles signals

import training  # noqa: E402

if __name__ == '__main__':
    training.main(__file__)
