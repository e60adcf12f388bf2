"""Deployment past one process: Triton model repositories, and preparing a bundle inside a container."""
