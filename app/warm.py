"""``panel serve app/main.py --setup app/warm.py``: run once when the server starts, before
any visitor -- compiles datashader's aggregations (:func:`app.pages.catalogue.warm_up`) so
that no user's first view or first colour change pays it."""

from app.pages.catalogue import warm_up

warm_up()
