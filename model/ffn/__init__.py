"""Feed-forward slot of a block: dense MLPs, Mixture of Experts and its router."""
