"""Everything about configs that must work before torch is imported: choices, resolvers, validation.

Nothing in this package imports torch, so a bad or unknown key fails in well under two
seconds, before any run folder is made.
"""
