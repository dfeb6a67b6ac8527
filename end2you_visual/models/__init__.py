"""Visual models: per-frame CNN feature extractor + recurrent layers + head."""
