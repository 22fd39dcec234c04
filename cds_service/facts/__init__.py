"""FHIR resources -> typed, frozen clinical facts: the only layer that knows FHIR shapes."""
