"""Train this model with the reference settings: python solve.py --help"""
import training

if __name__ == '__main__':
    training.main(__file__)
