"""mae-dbp: masked-autoencoder pretraining of vision transformers with decorrelated backpropagation."""

__version__ = "0.1.0"
