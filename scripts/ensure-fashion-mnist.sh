#!/bin/sh
# Make sure the four Fashion-MNIST IDX .gz files are available, installing the Debian
# package dataset-fashion-mnist when possible. Prints one line and fails otherwise.
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
has_all() { for f in $files; do [ -f "$1/$f" ] || return 1; done; }
if [ -n "$SYNAUG_FASHION_MNIST" ]; then
    has_all "$SYNAUG_FASHION_MNIST" && exit 0
    echo "error: SYNAUG_FASHION_MNIST=$SYNAUG_FASHION_MNIST lacks one of: $files; point it at a folder holding all four." >&2
    exit 2
fi
has_all /usr/share/datasets/fashion-mnist && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the Debian package dataset-fashion-mnist ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1
    has_all /usr/share/datasets/fashion-mnist && exit 0
fi
echo "error: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' or set SYNAUG_FASHION_MNIST to a folder with $files." >&2
exit 2
