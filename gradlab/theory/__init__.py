"""Theory: what mean-field propagation predicts for a network's gradient at initialisation."""
