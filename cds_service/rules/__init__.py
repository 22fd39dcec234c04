"""Pure decision: evaluate(facts, knowledge, as_of) -> Decision. No I/O, no clock, no Flask, no requests."""
