from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_item_price")]
    operations = [migrations.AddField("item", "note", models.TextField(default=""))]
