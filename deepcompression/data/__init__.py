"""Datasets as verified bytes and tensors: MNIST and IDX files, image folders, torchvision
classes, augmentation and streaming of splits too large to preload."""
