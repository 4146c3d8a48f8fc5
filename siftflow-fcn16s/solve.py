"""Train this model with the reference settings: python solve.py --help"""
from common import interrupts

interrupts.stop_while_loading()  # Ctrl-C or SIGTERM before training takes over: one line

import training  # noqa: E402

if __name__ == '__main__':
    training.main(__file__)
