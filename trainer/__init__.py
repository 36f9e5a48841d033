"""Train the original AlexNet: model, data, Keras-exact callbacks, secure checkpoints."""
