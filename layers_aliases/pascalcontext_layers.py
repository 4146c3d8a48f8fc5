from layers import *  # noqa: F401,F403  (the reference release's name for layers.py)
