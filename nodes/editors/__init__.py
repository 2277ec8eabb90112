"""Training-free editors (FlowEdit, SplitFlow, FlowChef, FlowOpt): one module per algorithm and its node.

Each works with every model family through `FlowModel` (algorithms.md §2–4, §6)."""
