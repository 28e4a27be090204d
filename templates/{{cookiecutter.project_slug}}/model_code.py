{{ cookiecutter._serving_header }}
{{ cookiecutter._serving_imports }}{{ cookiecutter._serving_body }}
