"""mbxmpp performance suite: load generator, peers harness, scenarios, budgets, reports."""
