from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("blog", "0001_initial")]
    operations = [
        migrations.AddField("post", "subtitle", models.CharField(max_length=100, default=""))
    ]
