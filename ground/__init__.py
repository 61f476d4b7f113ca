"""The ground: the exception tree, the home layout, ids and hashing.

Imported by every layer; imports nothing of lora_router (an import-linter contract).
"""
