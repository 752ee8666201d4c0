"""The Hub side: the Hub format of every folder hfsoup writes, model and dataset cards, and the one upload path."""
