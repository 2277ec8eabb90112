"""Training-free editors (FlowEdit, SplitFlow, FlowChef, FlowOpt): one module per algorithm and its node, what
they share in `common`, and `decompose`, which writes SplitFlow's sub-prompts.

Each works with every model family through `FlowModel` (docs/algorithms.md, "FlowEdit", "SplitFlow and Decompose Prompt", "FlowChef", "FlowOpt")."""
