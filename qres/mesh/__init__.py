"""QMesh: workers that serve LLM backends to the mesh, and the clients that use them."""
