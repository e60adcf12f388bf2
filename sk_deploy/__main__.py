from sk_deploy.cli import main

main()
