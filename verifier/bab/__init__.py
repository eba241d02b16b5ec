"""Branch and bound: split input boxes or ReLU phases until every piece is refuted or a
confirmed counterexample turns up."""
