{{ cookiecutter._train_header }}
{{ cookiecutter._train_imports }}

# Seeds, parameters and the working directory (the notebook's folder, as in Jupyter).
nb2prod_training.start(__file__)

{{ cookiecutter._train_body }}

# Save the serving state, the model card and the golden set to ./model/.
nb2prod_training.finish(globals())
