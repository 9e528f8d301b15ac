"""The restore's machinery: the verb, the staging copy, the swap, the drill."""
