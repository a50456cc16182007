"""The swarm simulator: nodes that learn predictors together by gossip, under attack."""
