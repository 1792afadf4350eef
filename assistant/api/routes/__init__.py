"""Thin routers over the Assistant: each route authenticates (through `caller`), calls one Assistant method with the
caller's User, so that the store's access filter and the audit apply as in the portal, and shapes the answer."""
