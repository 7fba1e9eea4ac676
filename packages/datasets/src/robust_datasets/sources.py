"""Where each on-disk dataset's files come from (shown by `robust data status` and in errors). Torch-free."""

WATERBIRDS_SOURCE = (
    "the group_DRO release (waterbird_complete95_forest2water2.tar.gz, github.com/kohpangwei/group_DRO); masks "
    "from the CUB-200-2011 segmentations (segmentations.tgz, www.vision.caltech.edu/datasets/cub_200_2011)"
)
CELEBA_SOURCE = "mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images) or its Kaggle CSV mirror"
LFF_SOURCE = (
    "the DisEnt release (github.com/kakaoenterprise/Learning-Debiased-Disentangled), or generate it with "
    "`robust data make-cmnist` / `robust data make-cifar10c`"
)
CIFAR_SOURCE = "www.cs.toronto.edu/~kriz/cifar.html (the python version)"
MNIST_SOURCE = (
    "yann.lecun.com/exdb/mnist (or torchvision's mirror); Fashion-MNIST: github.com/zalandoresearch/fashion-mnist"
)
