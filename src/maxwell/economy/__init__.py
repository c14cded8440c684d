"""The economy: $JOULE ledger, order book, mechanisms, spot price, billing and apoptosis.

Pure cores (no clock, file, socket or database inside them; time and randomness are passed in):

- `ledger`: double-entry rules over accounts in integer µ$J; `store` persists its journal in
  SQLite (the one adapter here; its parts are the `store_*` modules: schema, transaction, rows,
  compaction, audit, errors).
- `orderbook`: bids kept in price order, O(log n) insert / update / cancel.
- `mechanisms`: uniform, vcg, kelly, lottery and posted-price clearing behind one interface.
- `price`: grid price sources and the thermal PI controller that make the spot price.
- `billing`: the core equation, energy x spot price + bits freed x k_B T ln 2 x multiplier.
- `apoptosis`: which agents to freeze and which to kill this tick.
"""
