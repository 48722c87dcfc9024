# tests/inspect
