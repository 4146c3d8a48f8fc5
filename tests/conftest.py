"""pytest's setup for the suite: tests/ on the path (helpers.py), and Caffe's
own log quiet before any test module imports caffe."""
from common import caffe_setup

caffe_setup.quiet_caffe_log([])
