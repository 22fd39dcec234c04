"""Getting data from outside: FHIR access, SMART App Launch endpoints and token exchange."""
