"""The composition root: the mesh file, the state dir (keys, trust), running a mesh, discovery of agents."""
