# tests/ipc
