"""Two views that use the database on every request."""

from apps.notes import views
from django.urls import path

urlpatterns = [
    path("health/", views.health),
    path("ticks/", views.ticks),
]
