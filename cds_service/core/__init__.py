"""Bottom layer: exceptions, ids, URL and settings types, and network deadlines that every layer may use."""
