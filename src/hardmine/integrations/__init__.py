"""hardmine inside other training frameworks (each module imports its framework; nothing here imports one)."""
