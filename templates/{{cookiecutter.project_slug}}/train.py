{{ cookiecutter._train_header }}
{{ cookiecutter._train_imports }}

# Seeds, parameters and the working directory (the notebook's folder, as in Jupyter).
nb2prod_training.start(__file__)

{{ cookiecutter._train_body }}

# Pick the serving state out of this run's variables, compute the golden predictions
# with the notebook's own preprocess/predict code, and write model/ (state.pkl and
# model_card.json). Exits with code 3 if the notebook can't be served as tagged.
nb2prod_training.save_model(globals())
