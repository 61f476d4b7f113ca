"""Model cards read once per change of their file, for the route path's repeated checks.

The route service asks on every change which adapters are known (every card's status) and
which rollback target a card names. Parsing each card's YAML every time costs more the
more cards there are; a :class:`CardCache` re-parses a card only when its file changed
(its mtime, size or inode: a card is replaced by an atomic rename, so a rewrite is a new
inode), and reads the card file alone (``with_history=False``): its status history, which
grows with every move, is never read here.
"""

from __future__ import annotations

import threading

from lora_router.ground.errors import AdapterNotFound
from lora_router.ground.home import Home
from lora_router.registry.cards import ModelCard
from lora_router.registry.store import RegistryStore

_Key = tuple[int, int, int]


class CardCache:
    """Model cards of one home as their files hold them; thread-safe."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._store = RegistryStore(home)
        self._cards: dict[str, tuple[_Key, ModelCard]] = {}
        self._lock = threading.Lock()
        self.parses = 0  # card files parsed (a card's first read, or after it changed)

    def model_ids(self) -> list[str]:
        return self._store.list_model_ids()

    def model_card(self, adapter_id: str) -> ModelCard:
        """The card (without its history log); ``AdapterNotFound`` when there is none."""
        path = self.home.model_card_path(adapter_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise AdapterNotFound(f"no model card for adapter {adapter_id!r}",
                                  adapter=adapter_id) from None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            hit = self._cards.get(adapter_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        card = self._store.get_model_card(adapter_id, with_history=False)
        with self._lock:
            self.parses += 1
            self._cards[adapter_id] = (key, card)
        return card
