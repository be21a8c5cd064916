"""End-to-end tests of the whole local stack (the session fixtures are in tests/fixtures/)."""
