"""What daskstep does with a Docker engine besides the cluster (backends/docker.py): the step
containers and their labels (containers.py), per-analysis Dask images and what is in an image
(images.py), and the daskstep image itself (daskstep_image.py)."""
