"""ganforge: train and evaluate generative adversarial networks.

Goodfellow et al. 2014, "Generative Adversarial Nets"; Radford et al. 2016, "Unsupervised
Representation Learning with Deep Convolutional GANs" (DCGAN).
"""

__version__ = "0.1.0"
