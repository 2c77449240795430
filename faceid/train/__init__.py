"""Training the similarity head: pair sampling, the Keras network, the person-level split and calibration."""
