"""The seed course's book record as a JSON Schema, for the JSON-schema tests on the embedded model."""

from __future__ import annotations

# Bounded (maxLength, maximum), so that every answer ends within max_new_tokens whatever a 135M model writes.
BOOK = {
    "type": "object",
    "properties": {
        "libro_id": {"type": "integer", "minimum": 1, "maximum": 99999},
        "titulo": {"type": "string", "maxLength": 60},
        "autor": {"type": "string", "maxLength": 40},
        "año": {"type": "integer", "minimum": 1000, "maximum": 2100},
    },
    "required": ["libro_id", "titulo", "autor", "año"],
    "additionalProperties": False,
}
BOOK_QUESTION = "Provee una salida en formato JSON con las siguientes claves: libro_id, titulo, autor, año."
