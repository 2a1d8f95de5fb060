"""The registered compressors, one module each (:mod:`harness.model.registry` imports every module here on
first use, so adding a compressor is adding a file): ``mambamia`` and its presets, and the training-free
token reducers of the field (uniform pooling, random, DivPrune, DyCoke, VisionZip, FastVID, VidCom2,
HoliTom), which share :mod:`.base`. No imports here: the registry discovers the modules."""
