"""A minimal Django project using nebula_sync: one client per process (see :mod:`django_app.nebula`).

Run it from ``examples/`` (``NEBULA_HOSTS`` is a comma-separated list of graphd addresses)::

    NEBULA_HOSTS=127.0.0.1:9669 python -m django runserver --settings=django_app.settings
    NEBULA_HOSTS=127.0.0.1:9669 DJANGO_SETTINGS_MODULE=django_app.settings \\
        gunicorn -c gunicorn.conf.py django_app.wsgi
"""
