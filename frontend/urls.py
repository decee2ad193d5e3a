from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views

app_name = "frontend"
urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="frontend/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("projects/<str:ref>/", views.project_page, name="project"),
    path("projects/<str:ref>/label/", views.label_page, name="label"),
    path("projects/<str:ref>/queue/", views.queue_page, name="queue"),
    path("projects/<str:ref>/review/", views.review_page, name="review"),
    path("datasets/<int:pk>/", views.dataset_page, name="dataset"),
    path("runs/<int:pk>/", views.run_page, name="run"),
]
