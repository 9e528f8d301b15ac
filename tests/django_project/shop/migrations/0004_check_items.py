"""A data check that fails when SHOP_MIGRATION_FAILS is set: the tests' failing migrate."""

import os

from django.db import migrations


def check(apps: object, schema_editor: object) -> None:
    if os.environ.get("SHOP_MIGRATION_FAILS"):
        raise RuntimeError("shop.0004_check_items failed (SHOP_MIGRATION_FAILS is set)")


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_item_note")]
    operations = [migrations.RunPython(check, migrations.RunPython.noop)]
