"""dancegenre serve: the Flask app, its templates, served by waitress."""
