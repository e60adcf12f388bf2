"""Running models: devices, classification output; the Predictor over every backend lands here."""
