"""Capacity planning: measured pod behaviour + a traffic trace -> Knative settings, checked by
simulating Knative's autoscaler (``densenet plan``)."""
