import os

# Quiet Caffe's glog (net construction logs every layer); must precede the
# first `import caffe`.
os.environ.setdefault('GLOG_minloglevel', '2')
